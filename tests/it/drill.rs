//! (placeholder: filled by the drill work)
