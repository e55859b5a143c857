"""What an instructor writes or generates: ``config`` (assignment.toml), ``template`` (the
student template from the reference), ``questions`` (written questions and answer notebooks)."""
