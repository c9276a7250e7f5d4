"""A 2D wavelet scattering transform (Mallat; Bruna & Mallat 2013) in numpy, for fixed texture features.

Scattering coefficients are moduli of wavelet coefficients, cascaded: order 1 is ``|x * psi_{j,theta}|``, order 2
``||x * psi_{j1,theta1}| * psi_{j2,theta2}|`` for ``j2 > j1``, each locally averaged. They describe texture at
several scales and orientations, are stable to small deformations and need no training, which suits a few
hundred labelled images (CT vs MR: CT quantum noise, sharp bone edges; MR's smoother signal). The filters are
the Morlet wavelets of kymatio (same scales, centre frequencies and slant); the computation follows its
subsampled cascade, with plain block averages in place of the final Gaussian low-pass.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import fft

from medrag.errors import InputError


def _morlet_fourier(n: int, sigma: float, theta: float, xi: float, slant: float) -> np.ndarray:
    """The Fourier transform (real: the filter is Hermitian up to rounding) of an n x n periodised Morlet wavelet."""
    rotate = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    curvature = rotate @ np.diag([1.0, slant * slant]) @ rotate.T / (2 * sigma * sigma)
    gabor, envelope = np.zeros((n, n), np.complex128), np.zeros((n, n))
    base = np.mgrid[0:n, 0:n].astype(np.float64)
    for ex in (-2, -1, 0, 1):  # periodise: the envelope (sigma up to 0.8 * 2^(J-1)) is far narrower than 2n
        for ey in (-2, -1, 0, 1):
            xx, yy = base[0] + ex * n, base[1] + ey * n
            g = np.exp(-(curvature[0, 0] * xx * xx + 2 * curvature[0, 1] * xx * yy + curvature[1, 1] * yy * yy))
            envelope += g
            gabor += g * np.exp(1j * xi * (xx * np.cos(theta) + yy * np.sin(theta)))
    morlet = gabor - gabor.sum() / envelope.sum() * envelope  # zero mean: a wavelet, not a low-pass
    return np.real(np.fft.fft2(morlet)) / (2 * np.pi * sigma * sigma / slant)


def _periodise_filter(f: np.ndarray, level: int) -> np.ndarray:
    """The filter for a grid 2^level times coarser: its low frequencies, aliases summed (as kymatio)."""
    if level == 0:
        return f
    n, k = f.shape[0], 2**level
    m = n // k
    kept = f.copy()
    start, length = n // (2 * k), n - m
    kept[start:start + length, :] = 0
    kept[:, start:start + length] = 0
    return kept.reshape(k, m, k, m).sum(axis=(0, 2))


@functools.lru_cache(maxsize=4)
def morlet_filters(n: int, scales: int, orientations: int) -> dict[tuple[int, int, int], np.ndarray]:
    """Fourier-domain Morlet filters keyed (scale j, orientation, level): the filter of scale j for a signal
    already subsampled by 2^level (level <= j)."""
    out = {}
    for j in range(scales):
        for t in range(orientations):
            theta = (int(orientations - orientations / 2 - 1) - t) * np.pi / orientations
            f = _morlet_fourier(n, 0.8 * 2**j, theta, 3.0 / 4.0 * np.pi / 2**j, 4.0 / orientations)
            for level in range(j + 1):
                out[(j, t, level)] = _periodise_filter(f, level).astype(np.float32)
    return out


@functools.lru_cache(maxsize=4)
def _stacked_filters(n: int, scales: int, orientations: int) -> dict[tuple[int, int], np.ndarray]:
    """The filters of ``morlet_filters`` stacked over orientation, keyed (scale j, level): (orientations, m, m)."""
    filters = morlet_filters(n, scales, orientations)
    return {(j, level): np.stack([filters[(j, t, level)] for t in range(orientations)])
            for j in range(scales) for level in range(j + 1)}


def _subsample(spectrum: np.ndarray, factor: int) -> np.ndarray:
    """Spectra (..., n, n) of the signals subsampled by FACTOR in both directions (aliases averaged)."""
    if factor == 1:
        return spectrum
    m = spectrum.shape[-1] // factor
    return spectrum.reshape(*spectrum.shape[:-2], factor, m, factor, m).mean(axis=(-4, -2))


def _blocks(u: np.ndarray, size: int) -> np.ndarray:
    """U (..., n, n) averaged over square blocks down to size x size (a stand-in for the final Gaussian low-pass)."""
    k = u.shape[-1] // size
    return u.reshape(*u.shape[:-2], size, k, size, k).mean(axis=(-3, -1)) if k > 1 else u


def scattering(x: np.ndarray, scales: int = 4, orientations: int = 8) -> np.ndarray:
    """Scattering coefficients of a square image (n x n, n divisible by 2^scales) up to order 2:
    (1 + scales*orientations + orientations^2 * scales*(scales-1)/2, n / 2^scales, n / 2^scales), order 0 first,
    then order 1 by (j, theta), then order 2 by (j1, theta1, j2, theta2)."""
    x = np.asarray(x, dtype=np.float32)
    n = x.shape[0]
    if x.ndim != 2 or x.shape[1] != n or n % 2**scales:
        raise InputError(f"scattering needs a square image whose side divides by {2**scales}, got shape {x.shape}")
    size = n // 2**scales
    filters = _stacked_filters(n, scales, orientations)
    spectrum = fft.fft2(x)  # complex64: scipy keeps single precision, twice as fast as numpy's complex128
    out = [_blocks(x, size)[None]]
    second = []
    # All orientations of one scale go through one batched FFT call: many small transforms cost mostly call overhead.
    for j1 in range(scales):
        u1 = np.abs(fft.ifft2(_subsample(spectrum[None] * filters[(j1, 0)], 2**j1)))  # (orientations, m, m)
        out.append(_blocks(u1, size))
        u1_spectra = fft.fft2(u1)
        for t1 in range(orientations):
            for j2 in range(j1 + 1, scales):
                u2 = np.abs(fft.ifft2(_subsample(u1_spectra[t1][None] * filters[(j2, j1)], 2 ** (j2 - j1))))
                second.append(_blocks(u2, size))
    return np.concatenate(out + second).astype(np.float32)
