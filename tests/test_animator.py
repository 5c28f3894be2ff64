"""The mesh animator moves the right parts of the face and nothing else."""
import numpy as np
import pytest

from talker_stream.face.params import FaceParams


def region_change(before, after, box):
    x0, y0, x1, y1 = box
    return np.abs(after[y0:y1, x0:x1].astype(int) - before[y0:y1, x0:x1]).mean()


@pytest.fixture(scope="module")
def boxes(avatar):
    pts = avatar.face.points
    g = avatar.face.groups

    def box(idx, pad=3):
        p = pts[idx, :2]
        x0, y0 = np.floor(p.min(axis=0)).astype(int) - pad
        x1, y1 = np.ceil(p.max(axis=0)).astype(int) + pad
        return x0, y0, x1, y1

    return {"mouth": box(g["lips"]), "eye_l": box(g["eye_l"]), "eye_r": box(g["eye_r"]),
            "brow_l": box(g["brow_l"])}


def test_rest_pose_is_the_photo(animator, avatar, portrait):
    assert np.array_equal(animator.render(avatar, FaceParams()), portrait)


@pytest.mark.parametrize(
    "params",
    [FaceParams(jaw_open=1), FaceParams(smile=1, brow_raise=1), FaceParams(blink_l=1, blink_r=1),
     FaceParams(yaw=8, pitch=-6, roll=5, lift=0.03), FaceParams(brow_furrow=1, frown=1, squint=1, eye_wide=1)],
)
def test_background_is_untouched_exactly(animator, avatar, portrait, params):
    frame = animator.render(avatar, params)
    outside = ~avatar.head_mask()
    assert outside.mean() > 0.3, "most of the sample photo is background"
    assert np.array_equal(frame[outside], portrait[outside])
    assert not np.array_equal(frame, portrait), "the parameters must change the face"


def test_jaw_moves_the_mouth_not_the_eyes(animator, avatar, portrait, boxes):
    frame = animator.render(avatar, FaceParams(jaw_open=0.8))
    assert region_change(portrait, frame, boxes["mouth"]) > 10
    assert region_change(portrait, frame, boxes["eye_l"]) < 1


def test_open_mouth_shows_a_dark_interior(animator, avatar, boxes):
    x0, y0, x1, y1 = boxes["mouth"]
    closed = animator.render(avatar, FaceParams())[y0:y1, x0:x1].astype(float).sum(axis=2)
    opened = animator.render(avatar, FaceParams(jaw_open=1.0))[y0:y1, x0:x1].astype(float).sum(axis=2)
    assert (opened < 150).sum() > 3 * max(1, (closed < 150).sum()), "an open mouth must look like a mouth"


def test_blink_covers_the_eye(animator, avatar, portrait, boxes):
    frame = animator.render(avatar, FaceParams(blink_l=1, blink_r=1))
    for eye in ("eye_l", "eye_r"):
        x0, y0, x1, y1 = boxes[eye]
        before = portrait[y0:y1, x0:x1].astype(float).sum(axis=2)
        after = frame[y0:y1, x0:x1].astype(float).sum(axis=2)
        # the dark iris and pupil disappear under the lid
        assert (after < 200).sum() < 0.6 * (before < 200).sum()
    assert region_change(portrait, frame, boxes["mouth"]) < 1


def test_one_eye_can_wink(animator, avatar, portrait, boxes):
    frame = animator.render(avatar, FaceParams(blink_l=1))
    assert region_change(portrait, frame, boxes["eye_l"]) > 5
    assert region_change(portrait, frame, boxes["eye_r"]) < 0.5


def test_smile_lifts_the_mouth_corners(avatar):
    rig = avatar.rig
    corners = avatar.face.groups["corners"][:2]
    d = rig.displacement(FaceParams(smile=1))
    assert (d[corners, 1] < -1).all(), "smiling raises both corners (y grows downwards)"
    d = rig.displacement(FaceParams(frown=1))
    assert (d[corners, 1] > 1).all()


def test_brows_follow_emotion(avatar):
    rig = avatar.rig
    brow = avatar.face.groups["brow_l"]
    assert rig.displacement(FaceParams(brow_raise=1))[brow, 1].mean() < -1
    assert rig.displacement(FaceParams(brow_furrow=1))[brow, 1].mean() > 0.3


def test_head_pose_moves_the_whole_face(avatar):
    d = avatar.rig.displacement(FaceParams(roll=5))
    n = 468
    assert np.abs(d[:n]).max() > 3
    assert np.allclose(d[avatar.rig.outer_ring], 0), "the outer ring anchors the background"
