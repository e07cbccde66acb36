//! Model files from the Hugging Face hub: the local cache first, then a
//! download, with a quick reachability check so an offline host gets an
//! answer at once instead of after the HTTP client's retries.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hf_hub::Cache;
use hf_hub::api::sync::ApiBuilder;

use super::one_line;

const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
const REACH_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug)]
pub(crate) enum TokenizerFile {
    Json(PathBuf),
    Vocab(PathBuf),
}

#[derive(Debug)]
pub(crate) struct HubFiles {
    pub(crate) config: PathBuf,
    pub(crate) weights: PathBuf,
    pub(crate) tokenizer: TokenizerFile,
    /// The snapshot (commit) the files belong to, or "main" when unknown.
    pub(crate) revision: String,
}

/// The hub cache: `cache_dir` if given, else `HF_HUB_CACHE`, else `$HF_HOME/hub`
/// (hf-hub 0.5 itself only knows `HF_HOME`).
fn cache(cache_dir: Option<&Path>) -> Cache {
    if let Some(dir) = cache_dir {
        return Cache::new(dir.to_path_buf());
    }
    match std::env::var_os("HF_HUB_CACHE") {
        Some(dir) if !dir.is_empty() => Cache::new(PathBuf::from(dir)),
        _ => Cache::from_env(),
    }
}

fn endpoint(explicit: Option<&str>) -> String {
    explicit
        .map(str::to_string)
        .or_else(|| {
            std::env::var("HF_ENDPOINT")
                .ok()
                .filter(|e| !e.trim().is_empty())
        })
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
        .trim_end_matches('/')
        .to_string()
}

fn cached(cache: &Cache, repo: &str) -> Option<HubFiles> {
    let r = cache.model(repo.to_string());
    let config = r.get("config.json")?;
    let weights = r.get("model.safetensors")?;
    let tokenizer = match r.get("tokenizer.json") {
        Some(p) => TokenizerFile::Json(p),
        None => TokenizerFile::Vocab(r.get("vocab.txt")?),
    };
    let revision = revision_of(&config);
    Some(HubFiles {
        config,
        weights,
        tokenizer,
        revision,
    })
}

/// Cached files live in `snapshots/<commit>/<file>`.
fn revision_of(file: &Path) -> String {
    file.parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| n.len() >= 7 && n.chars().all(|c| c.is_ascii_hexdigit()))
        .unwrap_or_else(|| "main".to_string())
}

/// Finds or downloads the files of `repo`. The error is the one-line reason
/// that goes inside `ModelError::HubUnavailable`.
pub(crate) fn fetch(
    repo: &str,
    cache_dir: Option<&Path>,
    explicit_endpoint: Option<&str>,
) -> Result<HubFiles, String> {
    let cache = cache(cache_dir);
    if let Some(files) = cached(&cache, repo) {
        return Ok(files);
    }
    let cache_path = cache.path().display().to_string();
    let endpoint = endpoint(explicit_endpoint);
    let offline = std::env::var("HF_HUB_OFFLINE")
        .map(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        })
        .unwrap_or(false);
    if offline {
        return Err(format!(
            "not in the cache at {cache_path} and HF_HUB_OFFLINE is set"
        ));
    }
    let host = host_port(&endpoint)
        .map(|(h, _)| h)
        .unwrap_or_else(|| endpoint.clone());
    reachable(&endpoint).map_err(|e| {
        format!(
            "not in the cache at {cache_path} and {host} is unreachable: {}",
            one_line(&e)
        )
    })?;

    let api = ApiBuilder::from_cache(cache)
        .with_progress(false)
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| format!("cannot start the hub client: {}", one_line(&e.to_string())))?;
    let r = api.model(repo.to_string());
    let get = |file: &str| {
        r.get(file).map_err(|e| {
            format!(
                "download of {file} from {host} failed: {}",
                one_line(&e.to_string())
            )
        })
    };
    let config = get("config.json")?;
    let weights = get("model.safetensors")?;
    let tokenizer = match get("tokenizer.json") {
        Ok(p) => TokenizerFile::Json(p),
        Err(json_err) => match r.get("vocab.txt") {
            Ok(p) => TokenizerFile::Vocab(p),
            Err(_) => return Err(format!("{json_err} (and the repository has no vocab.txt)")),
        },
    };
    let revision = revision_of(&config);
    Ok(HubFiles {
        config,
        weights,
        tokenizer,
        revision,
    })
}

/// `https://host[:port]/...` → (host, port).
fn host_port(endpoint: &str) -> Option<(String, u16)> {
    let (rest, default_port) = if let Some(r) = endpoint.strip_prefix("https://") {
        (r, 443)
    } else if let Some(r) = endpoint.strip_prefix("http://") {
        (r, 80)
    } else {
        (endpoint, 443)
    };
    let authority = rest.split('/').next()?.rsplit('@').next()?;
    if authority.is_empty() {
        return None;
    }
    // [v6]:port, host:port or host.
    if let Some(v6) = authority.strip_prefix('[') {
        let (h, tail) = v6.split_once(']')?;
        let port = tail
            .strip_prefix(':')
            .and_then(|p| p.parse().ok())
            .unwrap_or(default_port);
        return Some((h.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), p.parse().ok()?)),
        None => Some((authority.to_string(), default_port)),
    }
}

/// Name resolution plus a TCP connect, bounded by REACH_TIMEOUT in total.
/// Resolution has no timeout in std, so it runs on a helper thread that is
/// left behind if it hangs.
fn reachable(endpoint: &str) -> Result<(), String> {
    let (host, port) =
        host_port(endpoint).ok_or_else(|| format!("cannot parse the endpoint {endpoint}"))?;
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    std::thread::spawn(move || {
        let result = (|| {
            let addrs: Vec<_> = (host.as_str(), port)
                .to_socket_addrs()
                .map_err(|e| format!("cannot resolve {host}: {e}"))?
                .collect();
            let mut last = format!("{host} has no addresses");
            for addr in addrs {
                let left = REACH_TIMEOUT.saturating_sub(start.elapsed());
                if left.is_zero() {
                    return Err(format!(
                        "no answer from {host}:{port} within {REACH_TIMEOUT:?}"
                    ));
                }
                match TcpStream::connect_timeout(&addr, left) {
                    Ok(_) => return Ok(()),
                    Err(e) => last = format!("cannot connect to {addr}: {e}"),
                }
            }
            Err(last)
        })();
        // The receiver may have given up already; nothing to report then.
        let _ = tx.send(result);
    });
    match rx.recv_timeout(REACH_TIMEOUT) {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} s", REACH_TIMEOUT.as_secs())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_to_host_and_port() {
        assert_eq!(
            host_port("https://huggingface.co"),
            Some(("huggingface.co".into(), 443))
        );
        assert_eq!(
            host_port("http://127.0.0.1:8080/x"),
            Some(("127.0.0.1".into(), 8080))
        );
        assert_eq!(host_port("https://[::1]:9/"), Some(("::1".into(), 9)));
        assert_eq!(host_port("https://"), None);
    }

    #[test]
    fn revision_is_the_snapshot_directory() {
        assert_eq!(
            revision_of(Path::new(
                "/c/models--a--b/snapshots/0123abcdef/config.json"
            )),
            "0123abcdef"
        );
        assert_eq!(revision_of(Path::new("/tmp/x/config.json")), "main");
    }
}
