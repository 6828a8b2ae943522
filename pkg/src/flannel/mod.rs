//! Integrations with flannel: its subnet file (`/run/flannel/subnet.env`).

pub mod subnet_file;
