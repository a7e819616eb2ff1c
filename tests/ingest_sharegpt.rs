//! Tests: ShareGPT and openai-messages ingest (in progress)
