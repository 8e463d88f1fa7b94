"""GLSL sources of the renderer (OpenGL 3.3 core).

One program draws both the skin and the mouth interior; the ``interior`` uniform switches the colour source, so the
two draw calls share the vertex buffers and only differ in their index buffer.
"""

VERTEX = """
#version 330
in vec3 in_ndc;      // x, y in [-1, 1] (y up), z = depth in model units (larger = nearer)
in vec3 in_color;    // shaded per-vertex colour
in float in_t;       // mouth-interior coordinate: -1 skin, 0 (upper lip) .. 1 (lower lip)
uniform vec2 depth_map;  // (offset, scale): clip z = (offset - z) * scale lands in [-1, 1], nearer = smaller
out vec3 v_color;
out float v_t;
void main() {
    // y is negated so that framebuffer row 0 is the image's top row (read back without a flip).
    gl_Position = vec4(in_ndc.x, -in_ndc.y, (depth_map.x - in_ndc.z) * depth_map.y, 1.0);
    v_color = in_color;
    v_t = in_t;
}
"""

FRAGMENT = """
#version 330
in vec3 v_color;
in float v_t;
uniform bool interior;
uniform vec3 teeth_color;
uniform vec3 cavity_color;
uniform vec3 tongue_color;
uniform float upper_teeth;   // fraction of the interior (from the upper lip) showing upper teeth
uniform float lower_teeth;   // fraction (from the lower lip) showing lower teeth
uniform float tongue_center;
uniform float tongue_width;
uniform float edge;          // softness of the band edges, in t units
layout(location = 0) out vec3 f_color;   // attachment 0: RGB image
layout(location = 1) out float f_cover;  // attachment 1: coverage mask (cleared to 0)

vec3 mouth(float t) {
    float tongue = 1.0 - smoothstep(0.0, tongue_width, abs(t - tongue_center));
    vec3 c = mix(cavity_color, tongue_color, tongue);
    float teeth = max(1.0 - smoothstep(upper_teeth - edge, upper_teeth + edge, t),
                      smoothstep(1.0 - lower_teeth - edge, 1.0 - lower_teeth + edge, t));
    return mix(c, teeth_color, teeth);
}

void main() {
    vec3 c = interior ? mouth(clamp(v_t, 0.0, 1.0)) : v_color;
    f_color = clamp(c, 0.0, 1.0);
    f_cover = 1.0;
}
"""
