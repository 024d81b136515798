"""Hardware abstraction layer (robots behind a safety layer). Not built yet: simulation only for now."""
