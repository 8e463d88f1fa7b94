"""OpenGL (moderngl, headless EGL) rendering of head meshes: ``Renderer``, ``RenderOutput``, ``render_parameters``."""

from .renderer import (EGL_PACKAGES, MouthStyle, Renderer, RenderOutput, create_context, render_parameters,
                       renderer_from_params)

__all__ = ["EGL_PACKAGES", "MouthStyle", "Renderer", "RenderOutput", "create_context", "render_parameters",
           "renderer_from_params"]
