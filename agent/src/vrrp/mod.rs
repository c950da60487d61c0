//! VRRP v2/v3: codec, state machine, driver.

pub mod fsm;
pub mod packet;
