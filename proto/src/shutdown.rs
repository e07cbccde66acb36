//! How both programs are asked to stop: SIGINT (Ctrl-C) or SIGTERM (what
//! systemd, Kubernetes and Slurm send), whichever comes first.

/// Resolves at the first SIGINT or SIGTERM. Where SIGTERM cannot be watched
/// (no signal support), only Ctrl-C ends the wait.
pub async fn signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
