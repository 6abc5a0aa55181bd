"""QuantLens: the router. Page config, navigation, and the shared sidebar; nothing else.

``streamlit run streamlit_app.py`` finds ``app`` below and serves it: the
dashboard (this file, run as the script of every session) plus the REST routes
of ``api/``. Streamlit runs the script as ``__main__``; the server imports it
under its module name, which is when ``app`` is built.
"""

import streamlit as st

if __name__ == "__main__":
    # A local icon: a material-symbol favicon is fetched from fonts.gstatic.com, which an
    # offline deployment cannot reach.
    st.set_page_config(page_title="QuantLens", page_icon="assets/icon.png", layout="wide")

    pages = [
        st.Page(
            "pages/classify.py", title="Classify", icon=":material/image_search:", default=True
        ),
        st.Page("pages/compare.py", title="Compare", icon=":material/compare:"),
        st.Page("pages/layers.py", title="Layers", icon=":material/stacked_line_chart:"),
        st.Page("pages/benchmark.py", title="Benchmark", icon=":material/speed:"),
        st.Page("pages/models.py", title="Models", icon=":material/deployed_code:"),
    ]

    with st.sidebar:
        st.markdown(
            "**QuantLens** runs an image classifier as its Keras original and as its "
            "TensorFlow Lite variants (fp32, fp16, dynamic, int8, int16x8, w4) on your "
            "images, and shows where in the network quantization changes the numbers."
        )

    st.navigation(pages).run()
else:
    from streamlit.runtime.pages_manager import PagesManager

    from api.routes import routes

    # Streamlit treats a folder named pages/ as v1 multipage pages until the first
    # st.navigation call; a server whose first visitor opens a deep link (/compare)
    # would then run that page without this router. st.navigation sets exactly this
    # flag; setting it once at start-up makes every session go through the router.
    PagesManager.uses_pages_directory = False
    app = st.App("streamlit_app.py", routes=routes)

    # Warm start: the default model's variants convert in the background (children at
    # lower priority) while the server waits for its first visitor, who joins the
    # conversion instead of starting it. QUANTLENS_WARM_START=0 turns it off.
    import os

    if os.environ.get("QUANTLENS_WARM_START", "1") != "0":
        from inference.core.specs import SLOW_VARIANTS
        from inference.registry.background_conversions import CONVERSIONS
        from inference.registry.zoo import DEFAULT_MODEL, ZOO

        _default = ZOO[DEFAULT_MODEL]
        CONVERSIONS.start(
            _default, [v for v in _default.variants if v not in SLOW_VARIANTS], nice=10
        )
