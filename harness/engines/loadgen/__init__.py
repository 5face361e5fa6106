"""MLPerf LoadGen as the load generator and judge of a run: its settings from the spec
(``settings.py``, pure), its SUT/QSL callbacks over an asyncio request function (``sut.py``) and the
request function for an OpenAI-compatible server (``openai.py``). LoadGen's logs are read back by
``harness.results.imports.loadgen``."""
