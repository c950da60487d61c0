//! VRRP v2/v3: codec, state machine, driver.

pub mod packet;
