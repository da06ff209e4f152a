"""The assistant: writes code into cells from their context."""
