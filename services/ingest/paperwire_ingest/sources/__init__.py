"""Network paper sources: arXiv (feeds, API, OAI-PMH) and Hugging Face daily papers, over one polite client.

Every request goes through ``http.PoliteTransport``: configured hosts only, https, a shared rate
limit for arXiv, bounded time and size, and XML checked with defusedxml before any parser sees it.
Each source module holds a Protocol, its one real implementation and its pure parsing.
"""
