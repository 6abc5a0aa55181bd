"""QuantLens: the router. Page config, navigation, and the shared sidebar; nothing else."""

import streamlit as st

st.set_page_config(page_title="QuantLens", page_icon=":material/biotech:", layout="wide")

pages = [
    st.Page("pages/classify.py", title="Classify", icon=":material/image_search:", default=True),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare:"),
    st.Page("pages/benchmark.py", title="Benchmark", icon=":material/speed:"),
    st.Page("pages/models.py", title="Models", icon=":material/deployed_code:"),
]

with st.sidebar:
    st.markdown(
        "**QuantLens** runs an image classifier as its Keras original and as four "
        "TensorFlow Lite variants (fp32, fp16, dynamic-range, int8) on your images."
    )

st.navigation(pages).run()
