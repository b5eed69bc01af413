//! Placeholder until the simulator lands.
#[derive(Debug, Clone)]
pub struct SimConfig;
#[derive(Debug, Clone)]
pub struct SimStorage;
