//! The benchmark driver (being written).

fn main() {}
