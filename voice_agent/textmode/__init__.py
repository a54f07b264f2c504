"""The agent without audio: `voice-agent chat` in the terminal, and conversation tests.

`terminal.py` runs a `TextSession` (`agent/text_session.py`) from typed lines;
`conversations.py` reads conversation test files, `checks.py` judges one run, `runner.py` runs
them in text mode or through a real call, and `pytest_plugin.py` collects them under pytest.
"""
