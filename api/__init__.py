"""HTTP API next to the dashboard (Starlette routes mounted by ``st.App``)."""
