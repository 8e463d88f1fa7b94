"""Linear blend skinning as FLAME defines it, as typed pure functions (batched, differentiable).

Shapes use B = batch, V = vertices, J = joints, K = blend-shape coefficients, P = pose-corrective features.
"""

from __future__ import annotations

import torch
from torch import Tensor


def batch_rodrigues(rot_vecs: Tensor, eps: float = 1e-8) -> Tensor:
    """Axis-angle vectors [N, 3] -> rotation matrices [N, 3, 3] (Rodrigues' formula, smooth at zero)."""
    angle = torch.linalg.norm(rot_vecs + eps, dim=1, keepdim=True)  # [N, 1]
    axis = rot_vecs / angle  # [N, 3]
    cos = torch.cos(angle)[:, :, None]  # [N, 1, 1]
    sin = torch.sin(angle)[:, :, None]
    x, y, z = axis.unbind(dim=1)
    zeros = torch.zeros_like(x)
    skew = torch.stack([zeros, -z, y, z, zeros, -x, -y, x, zeros], dim=1).view(-1, 3, 3)  # [N, 9] -> [N, 3, 3]
    ident = torch.eye(3, dtype=rot_vecs.dtype, device=rot_vecs.device)[None]
    return ident + sin * skew + (1.0 - cos) * torch.bmm(skew, skew)


def rodrigues(rot_vec: Tensor) -> Tensor:
    """One axis-angle vector [3] -> rotation matrix [3, 3]."""
    return batch_rodrigues(rot_vec.reshape(1, 3))[0]


def vertices2joints(j_regressor: Tensor, vertices: Tensor) -> Tensor:
    """Joint locations [B, J, 3] regressed from vertices [B, V, 3] with a (dense) regressor [J, V]."""
    return torch.einsum("jv,bvc->bjc", j_regressor, vertices)


def blend_shapes(coeffs: Tensor, basis: Tensor) -> Tensor:
    """Per-vertex displacements [B, V, 3] = sum_k coeffs[B, K] * basis[V, 3, K]."""
    return torch.einsum("bk,vck->bvc", coeffs, basis)


def transform_mat(rot: Tensor, trans: Tensor) -> Tensor:
    """Homogeneous transforms [N, 4, 4] from rotations [N, 3, 3] and translations [N, 3, 1]."""
    top = torch.cat([rot, trans], dim=2)  # [N, 3, 4]
    bottom = torch.zeros_like(top[:, :1, :])  # [N, 1, 4]
    bottom[:, :, 3] = 1.0
    return torch.cat([top, bottom], dim=1)


def batch_rigid_transform(rot_mats: Tensor, joints: Tensor, parents: Tensor) -> tuple[Tensor, Tensor]:
    """Forward kinematics along the kinematic tree.

    rot_mats [B, J, 3, 3] (local rotations), joints [B, J, 3] (rest joint locations), parents [J] (parents[0] = -1,
    each parent before its children). Returns posed joints [B, J, 3] and the relative transforms [B, J, 4, 4] that map
    rest-pose points to posed points for each joint (what LBS blends).
    """
    batch, num_joints = joints.shape[:2]
    rel_joints = joints.clone()
    rel_joints[:, 1:] = joints[:, 1:] - joints[:, parents[1:]]
    local = transform_mat(rot_mats.reshape(-1, 3, 3), rel_joints.reshape(-1, 3, 1))  # [B*J, 4, 4]
    local = local.view(batch, num_joints, 4, 4)  # [B*J, 4, 4] -> [B, J, 4, 4]
    chain = [local[:, 0]]
    for j in range(1, num_joints):  # J is 5 for FLAME: a loop over joints, never over vertices
        chain.append(torch.matmul(chain[int(parents[j])], local[:, j]))
    world = torch.stack(chain, dim=1)  # [B, J, 4, 4]
    posed_joints = world[:, :, :3, 3]
    # Remove the rest-pose joint location so the transform applies to rest-pose vertices directly.
    joints_h = torch.cat([joints, torch.zeros_like(joints[..., :1])], dim=2)[..., None]  # [B, J, 4, 1]
    correction = torch.matmul(world, joints_h)  # [B, J, 4, 1]
    rel_transforms = world - torch.nn.functional.pad(correction, [3, 0])
    return posed_joints, rel_transforms


def lbs(
    betas: Tensor,
    full_pose: Tensor,
    v_template: Tensor,
    shapedirs: Tensor,
    posedirs: Tensor,
    j_regressor: Tensor,
    parents: Tensor,
    lbs_weights: Tensor,
) -> tuple[Tensor, Tensor]:
    """FLAME/SMPL linear blend skinning.

    betas [B, K] (shape and expression coefficients, concatenated), full_pose [B, J*3] (axis-angle per joint),
    v_template [V, 3], shapedirs [V, 3, K], posedirs [P, V*3] with P = (J-1)*9, j_regressor [J, V], parents [J],
    lbs_weights [V, J]. Returns posed vertices [B, V, 3] and posed joints [B, J, 3].
    """
    batch = betas.shape[0]
    num_joints = j_regressor.shape[0]
    v_shaped = v_template[None] + blend_shapes(betas, shapedirs)  # [B, V, 3]
    joints = vertices2joints(j_regressor, v_shaped)  # [B, J, 3]
    rot_mats = batch_rodrigues(full_pose.reshape(-1, 3)).view(batch, num_joints, 3, 3)  # [B*J, 3, 3] -> [B, J, 3, 3]
    ident = torch.eye(3, dtype=betas.dtype, device=betas.device)
    pose_feature = (rot_mats[:, 1:] - ident).reshape(batch, -1)  # [B, J-1, 3, 3] -> [B, P]
    pose_offsets = torch.matmul(pose_feature, posedirs).view(batch, -1, 3)  # [B, V*3] -> [B, V, 3]
    v_posed = v_shaped + pose_offsets
    posed_joints, rel_transforms = batch_rigid_transform(rot_mats, joints, parents)
    # Blend only the top 3 rows of each joint's transform (the bottom row is constant): [B, J, 3, 4] -> [B, J, 12].
    top_rows = rel_transforms[:, :, :3, :].reshape(batch, num_joints, 12)
    blended = torch.matmul(lbs_weights, top_rows).view(batch, -1, 3, 4)  # [B, V, 12] -> [B, V, 3, 4]
    vertices = (blended[..., :3] * v_posed[:, :, None, :]).sum(-1) + blended[..., 3]  # [B, V, 3]
    return vertices, posed_joints
