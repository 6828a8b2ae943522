//! A small synchronous rtnetlink client: links, addresses, routes, neighbours, FDB.
