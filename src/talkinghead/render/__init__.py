"""OpenGL (moderngl, headless EGL) rendering of head meshes: ``Renderer``, ``RenderOutput``, ``render_parameters``,
``project_landmarks``."""

from .renderer import (EGL_PACKAGES, RenderParams, Renderer, RenderOutput, create_context, project_landmarks,
                       render_parameters)

__all__ = ["EGL_PACKAGES", "RenderParams", "Renderer", "RenderOutput", "create_context", "project_landmarks",
           "render_parameters"]
