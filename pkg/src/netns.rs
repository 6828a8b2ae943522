//! Network namespaces: open by path, enter and return (scoped), identify.
