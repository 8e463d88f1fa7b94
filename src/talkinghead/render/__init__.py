"""OpenGL (moderngl, headless EGL) rendering of head meshes: ``Renderer``, ``RenderOutput``, ``render_parameters``."""

from .renderer import (EGL_PACKAGES, RenderParams, Renderer, RenderOutput, create_context, render_parameters)

__all__ = ["EGL_PACKAGES", "RenderParams", "Renderer", "RenderOutput", "create_context", "render_parameters"]
