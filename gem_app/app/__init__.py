"""The app's non-UI logic (no Streamlit here): the workspace and sample fit, shared views of a
fit, projections of the sphere for the maps."""
