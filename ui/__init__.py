"""Streamlit helpers shared by the pages: cached resources, widgets, tables and charts."""
