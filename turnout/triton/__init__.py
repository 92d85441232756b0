"""Everything that talks to Triton: the embedded server, its repository API, config.pbtxt generation."""
