//! One file per runbook.
