"""The HTTP API, beside the page in the web app process: the jobs API (`/api/v1`), and the
AUTOMATIC1111 (`/sdapi/v1`) and OpenAI (`/v1/images`) doors for the clients people already run.
Every door queues through the same sink, limits and events as the page (docs/api.md)."""
