//! placeholder

mod realserver_tun;
