"""Camera shake: the picture's global translation against the background, and undoing it (pure).

A mount that shakes by a pixel or two moves every textured edge, so every edge differs by
gradient x shift and the noise estimate then blinds the detector; a person moves only their own
edges. `ShakeEstimator` measures the translation (Lucas-Kanade on the 160x90 picture over the
background's strongest-gradient pixels); `align` brings picture and background together, either
by moving the background to the picture or by registering the picture to the background
(`DetectorSpec.shake_register`, docs/camera.md "Shake registration").
"""

from __future__ import annotations

import cv2
import numpy as np

_SHAKE_PIXELS = 1500  # strongest-gradient pixels of the 160x90 picture used for the estimate
_REFIT_FRAMES = 25  # the background's edges stay put: their choice is renewed every 5 s at 5 fps
_CHECK_FRAMES = 5  # a steady camera is re-checked once a second at 5 fps; a shaking one every frame
_SHAKY_FRAMES = 25  # after a measured shake, every frame is checked for this many frames


class ShakeEstimator:
    """Global translation (detect px) of the picture against the background, when it is a shake."""

    def __init__(self, valid_small: np.ndarray, counters: dict[str, int]) -> None:
        """`valid_small`: the unmasked pixels (non-zero) at the size of the picture `shift` gets."""
        self._size = (valid_small.shape[1], valid_small.shape[0])
        self._valid_small_f = (valid_small > 0).astype(np.float32)
        self.counters = counters  # shared with the detector: `shake_frames`
        self.model: tuple[np.ndarray, ...] | None = None  # see `_fit`
        self.shaky = 0  # frames left of per-frame estimation (set by a measured shake)

    def reset(self) -> None:
        """The background was re-learnt: its strongest edges are chosen again."""
        self.model = None

    def shift(self, small: np.ndarray, bg8: np.ndarray, frame: int, iters: int) -> tuple[float, float] | None:
        """The shift (detect px) of `small` (the 160x90 picture) against `bg8`, if it matters.

        `frame` is the detector's frame count (when to re-check and re-fit); `iters` Gauss-Newton
        steps. d = cur - bg ~ -(gx*sx + gy*sy), solved in least squares over the model's pixels.
        """
        if self.model is None or frame % _REFIT_FRAMES == 0:
            self.model = self._fit(bg8)
        if not self.model or (self.shaky == 0 and frame % _CHECK_FRAMES):
            return None
        self.shaky = max(0, self.shaky - 1)
        idx, bs, gx, gy, inv = self.model
        w = self._size[0]
        px, py = (idx % w).astype(np.float32), (idx // w).astype(np.float32)
        hx, hy = 0.0, 0.0  # shift in half-size px
        small_f = small.astype(np.float32)
        for _ in range(iters):
            # Gauss-Newton: sample the picture where the background's pixels are now (bilinear), so a
            # shift of a pixel or more is not under-estimated by the linearisation.
            d = _bilinear(small_f, px + hx, py + hy) - bs
            d -= float(d.mean())  # an exposure offset is not a shift
            ux, uy = (-(inv @ np.array([float(gx @ d), float(gy @ d)]))).tolist()
            hx, hy = hx + ux, hy + uy
            if ux * ux + uy * uy < 0.01:
                break
        sx, sy = 2.0 * hx, 2.0 * hy  # half-size -> detect px
        if sx * sx + sy * sy < 0.3 * 0.3 or sx * sx + sy * sy > 16.0:
            return None  # steady camera, or not a shake (a pan is tamper, a jump a global change)
        self.shaky = _SHAKY_FRAMES
        self.counters["shake_frames"] = self.counters.get("shake_frames", 0) + 1
        return sx, sy

    def _fit(self, bg8: np.ndarray) -> tuple[np.ndarray, ...]:
        """(pixel indices, background values, gradients, inverse normal matrix), or () if too flat."""
        bs = cv2.resize(bg8, self._size, interpolation=cv2.INTER_AREA).astype(np.float32)
        gx = cv2.Sobel(bs, cv2.CV_32F, 1, 0, ksize=3, scale=0.125).ravel()
        gy = cv2.Sobel(bs, cv2.CV_32F, 0, 1, ksize=3, scale=0.125).ravel()
        mag = (np.abs(gx) + np.abs(gy)) * self._valid_small_f.ravel()
        idx = np.argpartition(mag, -_SHAKE_PIXELS)[-_SHAKE_PIXELS:]
        gxs, gys = gx[idx], gy[idx]
        a = np.array([[float(gxs @ gxs), float(gxs @ gys)], [float(gxs @ gys), float(gys @ gys)]])
        # Too little texture (or all edges one way) to measure a shift; shake then matters little.
        if float(np.trace(a)) / _SHAKE_PIXELS < 1.0 or np.linalg.det(a) < 0.05 * float(np.trace(a)) ** 2:
            return ()
        return idx, bs.ravel()[idx], gxs, gys, np.linalg.inv(a)


def align(cur: np.ndarray, bg8: np.ndarray, shift: tuple[float, float] | None,
          register: bool) -> tuple[np.ndarray, np.ndarray]:
    """(picture, background) in common coordinates, undoing a measured shake `shift`.

    `register`: the picture is moved back to the background (the mount's rest position), so the
    returned picture is what the background learns: a background that learnt the shaking pictures
    themselves is their blur, and the mesh and the gravel's texture then differ from every sharp
    frame however well the shift is known. Otherwise the background is moved to the picture.
    """
    if shift is None:
        return cur, bg8
    if register:
        return _translate(cur, -shift[0], -shift[1]), bg8
    return cur, _translate(bg8, shift[0], shift[1])


def _translate(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    m = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]], np.float32)
    out: np.ndarray = cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), borderMode=cv2.BORDER_REPLICATE)
    return out


def _bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """float32 `img` sampled at (x, y) (float arrays), bilinear, clamped to the picture."""
    h, w = img.shape
    x = np.clip(x, 0.0, w - 1.001)
    y = np.clip(y, 0.0, h - 1.001)
    x0, y0 = x.astype(np.int32), y.astype(np.int32)
    fx, fy = x - x0, y - y0
    top = img[y0, x0] * (1 - fx) + img[y0, x0 + 1] * fx
    bot = img[y0 + 1, x0] * (1 - fx) + img[y0 + 1, x0 + 1] * fx
    out: np.ndarray = top * (1 - fy) + bot * fy
    return out
