//! (placeholder: filled by the base_backup work)
