"""Ingestion: files, exposition formats, scraping and sampling."""
