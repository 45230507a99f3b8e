//! Writes a small WAL for trying `synod wal inspect` / `verify`:
//! `cargo run -p synod-wal --example fill -- DIR FRAMES`.

use glommio::{LocalExecutorBuilder, Placement};
use synod_wal::{Wal, WalConfig};

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: fill DIR FRAMES");
    let frames: u64 = args
        .next()
        .map_or(10, |n| n.parse().expect("FRAMES is a number"));
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move {
            let (wal, report) = Wal::open(&dir, WalConfig::default()).await.expect("open");
            println!("{report:?}");
            for i in 0..frames {
                wal.append((i % 3) as u16, format!("frame {i}").as_bytes())
                    .expect("append");
            }
            println!("durable up to {}", wal.sync().await.expect("sync"));
            wal.close().await.expect("close");
        })
        .expect("executor")
        .join()
        .expect("executor thread");
}
