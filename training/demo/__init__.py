"""The tiny demo model the service and every test run on: a tokenizer trained on our own Indonesian
text, a small Llama-architecture base trained briefly on it, and the demo adapter."""
