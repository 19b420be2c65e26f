from tests.tiny_model_fixture import tiny_engine, tiny_model_path, tiny_server_url

__all__ = ["tiny_engine", "tiny_model_path", "tiny_server_url"]
