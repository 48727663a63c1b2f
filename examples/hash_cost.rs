//! What one password verification costs in each hash format: Apache pays this
//! on every registry request it authenticates. Prints the median of repeated
//! timings, in microseconds, for each format (bcrypt at the given cost).
//!
//! Usage: hash_cost [BCRYPT_COST]

use std::time::Instant;

use registry_rubber::htpasswd::{self, HashType};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cost: u32 = std::env::args().nth(1).map_or(Ok(10), |s| s.parse())?;
    let password = "a-pipeline-Passw0rd";
    for kind in HashType::ALL {
        let stored = htpasswd::hash(kind, password, cost)?;
        let rounds = if kind == HashType::Bcrypt { 7 } else { 101 };
        let mut micros: Vec<f64> = (0..rounds)
            .map(|_| {
                let start = Instant::now();
                assert!(htpasswd::verify(password, &stored));
                start.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        micros.sort_by(f64::total_cmp);
        println!(
            "verify_us {:<7} {:>10.1}",
            kind.name(),
            micros[micros.len() / 2]
        );
    }
    Ok(())
}
