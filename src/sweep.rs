//! sweep (in progress)
