//! Simulators and e2e helpers (TODO).
