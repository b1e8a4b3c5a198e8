//! (placeholder: filled by the pitr work)
