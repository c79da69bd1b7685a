//! `echo-backend --listen ADDR [--listen ADDR ...] --name NAME`: answers every request 200
//! with a JSON description of it and the header `x-backend: NAME`.

use std::net::SocketAddr;

use clap::Parser;

#[derive(Parser)]
#[command(about = "HTTP echo backend for tests and examples")]
struct Args {
    /// Address to listen on (repeatable).
    #[arg(long, required = true)]
    listen: Vec<SocketAddr>,
    /// Name reported in the body's `backend` field and the `x-backend` header.
    #[arg(long, default_value = "echo")]
    name: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut tasks = Vec::new();
    for addr in &args.listen {
        tasks.push(kgw_harness::spawn_echo(*addr, &args.name).await?);
        eprintln!("echo-backend {} listening on {addr}", args.name);
    }
    tokio::select! {
        _ = futures_wait(tasks) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}

async fn futures_wait(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}
