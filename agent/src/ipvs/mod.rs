//! IPVS over generic netlink: codec, client, reconcile.
