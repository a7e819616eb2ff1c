//! Helpers the integration modules share.

/// The bundled Azure 2023 conversation sample.
pub fn azure_trace() -> String {
    format!(
        "{}/datasets/azure_conv_small.parquet",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// A finished `llm-replay replay` of the Azure sample against `url`
/// (`args` added), without an API key in the environment.
pub struct Replayed {
    /// Exit status.
    pub success: bool,
    /// What it printed on stderr.
    pub stderr: String,
    /// The results file's rows.
    pub results: llm_replay::record::reader::Results,
}

/// Runs the binary's `replay` of the Azure sample against `url` with `-q -o`
/// a fresh file, then `args`, and reads its results.
pub async fn replay_azure(url: &str, args: &[&str]) -> Replayed {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.parquet");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_llm-replay"))
        .env_remove("OPENAI_API_KEY")
        .arg("replay")
        .arg(azure_trace())
        .args(["--url", url, "-q", "-o"])
        .arg(&out)
        .args(args)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let results = llm_replay::record::read_results(&out)
        .unwrap_or_else(|e| panic!("reading {}: {e}\n{stderr}", out.display()));
    Replayed {
        success: output.status.success(),
        stderr,
        results,
    }
}
