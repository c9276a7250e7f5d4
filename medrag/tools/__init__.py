"""Tools the agent calls. Each declares its inputs, outputs and modalities."""
