"""Ray actors that hold the loaded models and process whole shards."""
