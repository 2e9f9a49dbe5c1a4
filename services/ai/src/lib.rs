//! AI operations.
