"""The mouth at close range: closures meet, photo teeth stay photo teeth, soft lip edges,
an interior with depth, and no frame where it pops in.

Two portraits: the sample (its smile shows teeth, so the upper row comes from the photo)
and the same face with its lips shut (rendered by the animator itself with a pressed
``jaw_open``, then prepared as a new portrait), whose teeth come from the shaded model.
"""
import cv2
import numpy as np
import pytest

from talker_stream.face.params import FaceParams
from talker_stream.face.rig import LOWER_INNER, N_MESH, UPPER_INNER
from talker_stream.face.visemes import in_context, mouth_track
from talker_stream.frames import Phoneme


def lum(rgb):
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def moved_points(avatar, params):
    return avatar.rig.rest[:N_MESH] + avatar.rig.displacement(params)[:N_MESH]


def lip_gap(points):
    """The opening between the inner lips at the three middle columns (px)."""
    return float(np.mean(points[LOWER_INNER[4:7], 1] - points[UPPER_INNER[4:7], 1]))


def interior_mask(avatar, params, shape, erode=2):
    """Pixels well inside the moved inner-lip contour."""
    pts = moved_points(avatar, params)
    poly = np.vstack([pts[UPPER_INNER], pts[LOWER_INNER[::-1]]])[:, :2]
    m = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(m, [np.round(poly * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
    if erode:
        m = cv2.erode(m, np.ones((2 * erode + 1, 2 * erode + 1), np.uint8))
    return m > 0


@pytest.fixture(scope="module")
def closed_avatar(animator, avatar):
    """The sample face with its lips shut: a portrait that shows no teeth."""
    shut = animator.render(avatar, FaceParams(jaw_open=-0.45))
    return animator.prepare(shut, source="closed-lips variant")


@pytest.fixture(scope="module")
def big_closed_avatar(animator, portrait):
    """The same at twice the size (a 704 px portrait, an 80 px mouth), where the tongue
    and the lower row are several pixels tall."""
    big = cv2.resize(portrait, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    av = animator.prepare(big, source="sample at 2x")
    shut = animator.render(av, FaceParams(jaw_open=-0.45))
    return animator.prepare(shut, source="closed-lips variant at 2x")


def test_the_two_portraits_take_their_teeth_from_where_they_should(avatar, closed_avatar):
    assert avatar.mouth.photo_teeth is not None, "the sample's smile shows teeth"
    assert closed_avatar.mouth.photo_teeth is None, "closed lips show no teeth"
    assert closed_avatar.mouth.rest_gap < 1.5


def speech_with_closures(rate=16000):
    """'a m a b a p a' with loud vowels, a loud M and quiet B and P."""
    seg = [("_", 0.15, 0.0), ("a", 0.2, 1.0), ("m", 0.1, 0.5), ("a", 0.2, 1.0), ("b", 0.08, 0.3),
           ("a", 0.2, 1.0), ("p", 0.08, 0.1), ("a", 0.2, 1.0), ("_", 0.15, 0.0)]
    pcm, phonemes, at = [], [], 0
    for sym, dur, level in seg:
        k = int(dur * rate)
        t = np.arange(k) / rate
        pcm.append((0.3 * level * np.sin(2 * np.pi * 140 * t) * (1 + 0.3 * np.sin(2 * np.pi * 900 * t))).astype(np.float32))
        phonemes.append(Phoneme(sym, at, k))
        at += k
    return np.concatenate(pcm), phonemes, rate


@pytest.mark.parametrize("which", ["sample", "closed"])
def test_m_b_p_close_the_lips(animator, avatar, closed_avatar, which):
    """At the middle of each M, B and P of real co-articulated speech (the track as the
    timeline makes it) the lips meet, even over the teeth the photo shows at rest; an
    independent tracker on the rendered frames agrees."""
    from talker_stream.face.lipsync import track_face

    av = avatar if which == "sample" else closed_avatar
    pcm, phonemes, rate = speech_with_closures()
    centres = np.array([p.start + p.length / 2 for p in phonemes])
    tr = mouth_track(pcm, rate, centres, phonemes)
    closures = [i for i, p in enumerate(phonemes) if p.symbol in "mbp"]
    vowels = [i for i, p in enumerate(phonemes) if p.symbol == "a"]
    frames, gaps = [], []
    for i in closures + vowels:
        p = FaceParams(jaw_open=float(tr.jaw_open[i]), mouth_wide=float(tr.mouth_wide[i]),
                       mouth_round=float(tr.mouth_round[i]))
        gaps.append(lip_gap(moved_points(av, p)))
        frames.append(animator.render(av, p))
    shut, open_ = np.array(gaps[: len(closures)]), np.array(gaps[len(closures) :])
    assert (shut <= 0.5).all(), f"the inner lips must meet on M, B, P (gaps {shut.round(2)} px)"
    assert open_.min() > 3.0, "the vowels between them open the mouth"
    seen, _ = track_face(frames)
    rest_seen, _ = track_face([av.image])
    assert np.nanmax(seen[: len(closures)]) < 0.4 * np.nanmin(seen[len(closures) :])
    if which == "sample":
        assert np.nanmax(seen[: len(closures)]) < 0.5 * rest_seen[0], "closed tighter than the toothy smile at rest"


def test_press_thins_the_lips_visibly(avatar):
    """M, B, P are a press, not just a touch: the red of the lips rolls in."""
    from talker_stream.face.rig import LOWER_OUTER, UPPER_OUTER

    touch = moved_points(avatar, FaceParams(jaw_open=-0.3))
    press = moved_points(avatar, FaceParams(jaw_open=-0.45))
    h_touch = touch[LOWER_OUTER[4:7], 1].mean() - touch[UPPER_OUTER[4:7], 1].mean()
    h_press = press[LOWER_OUTER[4:7], 1].mean() - press[UPPER_OUTER[4:7], 1].mean()
    assert h_press < 0.93 * h_touch


def test_photo_teeth_keep_their_colour_and_stay_with_the_skull(animator, avatar, portrait):
    """Opened, the upper teeth are the photo's own pixels where they were (they belong to
    the skull, not the chin): close to the photo pixel by pixel, and in mean colour."""
    mouth = avatar.mouth
    rest = avatar.rig.rest
    mw = avatar.rig.mouth_width
    cx = rest[[13, 14], 0].mean()
    xs = np.arange(int(cx - 0.18 * mw), int(cx + 0.18 * mw) + 1)
    yu = np.interp(xs, *rest[UPPER_INNER][np.argsort(rest[UPPER_INNER, 0])].T)
    edge = np.interp(xs, mouth.patch_x, mouth.edge_upper_rest)
    band = np.zeros(portrait.shape[:2], bool)
    for x, a, b in zip(xs, yu, edge):
        band[int(np.ceil(a + 2)) : int(np.floor(min(b, a + 0.14 * mw))), x] = True
    assert band.sum() > 20, "the sample shows enough teeth to compare"
    photo = portrait[band].astype(float)
    for jaw in (0.5, 1.0):
        frame = animator.render(avatar, FaceParams(jaw_open=jaw))
        got = frame[band].astype(float)
        assert np.abs(got - photo).mean() < 14, f"jaw {jaw}: the teeth are not the photo's pixels"
        lab = cv2.cvtColor(np.float32([[got.mean(0), photo.mean(0)]]) / 255, cv2.COLOR_RGB2LAB)[0]
        assert np.linalg.norm(lab[0] - lab[1]) < 6, f"jaw {jaw}: teeth colour drifted (dE {np.linalg.norm(lab[0] - lab[1]):.1f})"
        # and they are teeth, not cavity: far brighter than the lips
        assert lum(got).mean() > lum(mouth.lip) + 15


def test_lower_teeth_come_down_with_the_jaw(animator, big_closed_avatar):
    """Down the middle of the opening: upper teeth, the dark gap, then the lower teeth.
    Opening further moves the bottom of the gap (the lower row's edge) down with the lower
    lip, while its top (the upper row's edge, fixed to the skull) stays where it was."""
    av = big_closed_avatar
    cx = int(round(av.rig.rest[[13, 14], 0].mean()))
    tops, bottoms, lips, lower_teeth = [], [], [], []
    for jaw in (0.7, 1.0):
        p = FaceParams(jaw_open=jaw)
        frame = animator.render(av, p).astype(float)
        pts = moved_points(av, p)
        col = lum(frame[:, cx - 1 : cx + 2].mean(axis=1))
        ys = np.arange(int(np.ceil(pts[13, 1])), int(np.floor(pts[14, 1])))
        dark = ys[col[ys] < 80]
        assert len(dark), "an open mouth has a dark gap between the rows"
        tops.append(dark.min())
        bottoms.append(dark.max())
        lips.append(pts[14, 1])
        below = col[dark.max() + 1 : int(np.floor(pts[14, 1])) - 1]
        lower_teeth.append(below.max() if len(below) else 0.0)
    assert bottoms[1] - bottoms[0] > 0.5 * (lips[1] - lips[0]) > 1
    assert abs(tops[1] - tops[0]) <= 1
    assert lower_teeth[-1] > 150, "wide open, the lower teeth show above the lower lip"


@pytest.mark.parametrize("which", ["sample", "closed"])
def test_inner_lip_edge_is_soft(animator, avatar, closed_avatar, which):
    """The interior is cut by the inner lips with a ramp, not a step: painted once over
    black and once over white, the two frames give its coverage (alpha) exactly; across
    each inner lip, no one-pixel step of the alpha is close to the whole way."""
    av = avatar if which == "sample" else closed_avatar
    p = FaceParams(jaw_open=1.0)
    pts = moved_points(av, p)
    black = np.zeros_like(av.image)
    white = np.full_like(av.image, 255)
    av.mouth.paint(black, pts, p)
    av.mouth.paint(white, pts, p)
    alpha = 1 - (white.astype(float) - black.astype(float)).mean(axis=2) / 255
    mw = av.rig.mouth_width
    steps, reach = [], []
    for contour in (UPPER_INNER, LOWER_INNER):
        c = pts[contour]
        order = np.argsort(c[:, 0])
        for x in range(int(pts[14, 0] - 0.25 * mw), int(pts[14, 0] + 0.25 * mw) + 1):
            y = int(round(np.interp(x, c[order, 0], c[order, 1])))
            prof = alpha[y - 4 : y + 5, x]
            steps.append(np.abs(np.diff(prof)).max())
            reach.append(prof.max() - prof.min())
    assert min(reach) > 0.9, "the interior covers fully inside and nothing outside"
    assert max(steps) < 0.75, f"a hard inner-lip edge (alpha step {max(steps):.2f})"
    # and in the real picture: across the lower lip, no step is the whole contrast
    frame = animator.render(av, p).astype(float)
    low = pts[LOWER_INNER]
    order = np.argsort(low[:, 0])
    ratios = []
    for x in range(int(pts[14, 0] - 0.25 * mw), int(pts[14, 0] + 0.25 * mw) + 1):
        y = int(round(np.interp(x, low[order, 0], low[order, 1])))
        prof = lum(frame[y - 2 : y + 3, x])
        contrast = abs(prof[-1] - prof[0])
        if contrast > 25:
            ratios.append(np.abs(np.diff(prof)).max() / contrast)
    if ratios:
        assert np.median(ratios) < 0.8


@pytest.mark.parametrize("which", ["sample", "closed", "closed-2x"])
@pytest.mark.parametrize("sound", ["a", "ɔ", "l", "ɛ"])
def test_interior_is_never_one_flat_colour(animator, avatar, closed_avatar, big_closed_avatar, which, sound):
    av = {"sample": avatar, "closed": closed_avatar, "closed-2x": big_closed_avatar}[which]
    jaw, wide, rnd, tongue = in_context(sound)
    p = FaceParams(jaw_open=jaw, mouth_wide=wide, mouth_round=rnd, tongue=tongue)
    frame = animator.render(av, p)
    inside = interior_mask(av, p, frame.shape, erode=1)
    assert inside.sum() > 30, "the mouth is open on this sound"
    px = frame[inside].astype(float)
    L = lum(px)
    assert np.percentile(L, 90) - np.percentile(L, 10) > 40, "no depth: teeth, tongue and throat look alike"
    assert L.std() > 15
    assert len(np.unique(px.astype(np.uint8), axis=0)) > 0.3 * len(px), "flat fill"
    # teeth are brighter than the lips; on an open vowel the throat is dark
    assert np.percentile(L, 95) > lum(av.mouth.lip) + 10
    if sound in "aɔɛ":
        assert np.percentile(L, 5) < 80


def test_the_tongue_shows_on_l_and_th(animator, big_closed_avatar):
    """With the tip raised, more of the interior is tongue-red (and it changes the picture)."""
    av = big_closed_avatar
    base = FaceParams(jaw_open=0.6)
    up = FaceParams(jaw_open=0.6, tongue=1.0)
    a, b = animator.render(av, base).astype(float), animator.render(av, up).astype(float)
    inside = interior_mask(av, up, a.shape, erode=0)

    def reddish(img):
        px = img[inside]
        return int(((px[:, 0] > px[:, 1] + 35) & (px[:, 0] > 90)).sum())

    assert reddish(b) > reddish(a) + 10
    assert np.abs(a - b)[inside].mean() > 3


def test_interior_fades_in_without_a_pop(animator, closed_avatar, avatar):
    """A slow jaw sweep: the mouth region changes smoothly, no single step jumps."""
    for av in (avatar, closed_avatar):
        pts = av.rig.rest
        mw = av.rig.mouth_width
        cx, cy = pts[[13, 14]].mean(axis=0)
        box = (slice(int(cy - 0.4 * mw), int(cy + 0.6 * mw)), slice(int(cx - 0.7 * mw), int(cx + 0.7 * mw)))
        prev, steps = None, []
        for jaw in np.arange(-0.3, 0.61, 0.03):
            f = animator.render(av, FaceParams(jaw_open=float(jaw)))[box].astype(float)
            if prev is not None:
                steps.append(np.abs(f - prev).mean())
            prev = f
        steps = np.array(steps)
        assert steps.max() < 3.0 * np.median(steps) + 0.5, f"a pop: steps {steps.round(2)}"


def test_lips_keep_their_thickness_as_the_jaw_drops(avatar):
    from talker_stream.face.rig import LOWER_OUTER, UPPER_OUTER

    rest = avatar.rig.rest
    opened = moved_points(avatar, FaceParams(jaw_open=1.0))

    def thickness(pts):
        up = pts[UPPER_INNER[4:7], 1].mean() - pts[UPPER_OUTER[4:7], 1].mean()
        low = pts[LOWER_OUTER[4:7], 1].mean() - pts[LOWER_INNER[4:7], 1].mean()
        return up, low

    (u0, l0), (u1, l1) = thickness(rest), thickness(opened)
    assert abs(u1 - u0) < 0.12 * u0 and abs(l1 - l0) < 0.12 * l0
    assert lip_gap(opened) - lip_gap(rest) > 0.2 * avatar.rig.mouth_width


def test_round_and_wide_shape_the_opening(avatar):
    def width(p):
        pts = moved_points(avatar, p)
        return pts[UPPER_INNER[-1], 0] - pts[UPPER_INNER[0], 0]

    neutral = width(FaceParams(jaw_open=0.5))
    assert width(FaceParams(jaw_open=0.5, mouth_round=1.0)) < 0.85 * neutral
    assert width(FaceParams(jaw_open=0.5, mouth_wide=1.0)) > 1.1 * neutral


def test_jaw_and_smile_move_chin_and_cheeks(avatar):
    from talker_stream.face.landmarks import CHIN

    g = avatar.face.groups
    d = avatar.rig.displacement(FaceParams(jaw_open=1.0))
    assert d[CHIN, 1] > 0.08 * avatar.rig.face_height
    s = avatar.rig.displacement(FaceParams(smile=1.0))
    # the cheeks under the eyes rise with a smile
    for side in ("l", "r"):
        eye = avatar.rig.rest[g[f"eye_{side}_lower"]].mean(axis=0)
        below = np.linalg.norm(avatar.rig.rest[:N_MESH] - (eye + [0, 0.12 * avatar.rig.face_height]), axis=1) < 0.05 * avatar.rig.face_height
        assert below.any() and s[:N_MESH][below, 1].mean() < -0.015 * avatar.rig.face_height


@pytest.mark.parametrize("which", ["sample", "closed-2x"])
def test_lower_lip_moves_as_one_piece(animator, avatar, big_closed_avatar, which):
    """Wide open, the middle of the lower lip is the photo's lower lip moved down, not
    torn or smeared: no triangle of the warp bridges from one lip into the other."""
    from talker_stream.face.rig import LOWER_OUTER

    av = avatar if which == "sample" else big_closed_avatar
    p = FaceParams(jaw_open=1.0)
    rest = av.rig.rest
    mw = av.rig.mouth_width
    lip = np.zeros(av.image.shape[:2], np.uint8)
    poly = np.vstack([rest[LOWER_INNER], rest[LOWER_OUTER[::-1]]])
    cv2.fillPoly(lip, [np.round(poly).astype(np.int32)], 1)
    lip = cv2.erode(lip, np.ones((3, 3), np.uint8)) > 0
    cx = rest[14, 0]
    xs = np.arange(lip.shape[1])[None, :]
    lip &= np.abs(xs - cx) < 0.2 * mw
    assert lip.sum() > 15
    d = av.rig.displacement(p)
    shift = int(round(d[[14, 17], 1].mean()))
    assert shift > 0.15 * mw
    frame = animator.render(av, p).astype(float)
    ys, xs_ = np.nonzero(lip)
    moved = frame[ys + shift, xs_]
    photo = av.image[ys, xs_].astype(float)
    assert np.abs(moved - photo).mean() < 14, "the lower lip is torn or smeared"
