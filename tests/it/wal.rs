//! (placeholder: filled by the wal work)
