"""The clinician service: a FastAPI app, its case database and its web page (``[serve]`` extra).

Build it with ``dermdx.service.app.create_app(predictor, settings)``; ``dermdx serve`` does that
and runs it with uvicorn. Nothing here is imported by the rest of dermdx.
"""
