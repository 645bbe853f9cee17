"""The answer pipeline: retrieve, render a versioned prompt, call the model, cite."""
