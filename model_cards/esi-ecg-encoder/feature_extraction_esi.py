"""ECG preprocessing for ESI: lead mapping by name, polyphase resampling, optional band-pass, per-lead z-score,
crop/pad to the model's duration. Research software, not a diagnostic device."""

from collections.abc import Sequence
from fractions import Fraction

import numpy as np
import torch
from transformers import BatchFeature, SequenceFeatureExtractor

from .leads import PTBXL_LEAD_ORDER, map_leads_by_name

# Bound on orig_rate * up in `resample_poly` (samples per second of the zero-stuffed signal).
MAX_UPSAMPLED_HZ = 50_000


def resample_poly(signal: np.ndarray, orig_rate: int, target_rate: int, half_width: int = 10) -> np.ndarray:
    """Polyphase resampling with a Kaiser-windowed sinc FIR, like `scipy.signal.resample_poly`.

    signal: (C, N) -> (C, ceil(N * up / down)), up / down ~ target_rate / orig_rate. The anti-aliasing cutoff
    is the lower Nyquist rate.

    Bounded work for any rate: only the taps that meet real samples are computed (no zero-stuffed copy of the
    signal), in blocks of outputs, so memory stays under ~(C + 2) x 2 MB whatever the rates and length. The
    filter has 20 x max(up, down) taps, so `up` is bounded by MAX_UPSAMPLED_HZ / orig_rate and the ratio is
    the nearest fraction with that denominator (`Fraction.limit_denominator`). The price is a small rate
    error for rates sharing no factor with the target: at most 0.12% for 50 Hz to 10 kHz into 100 Hz
    (2003 Hz is read as 2004.2 Hz, 0.06%), which stretches every interval by that fraction (QT 400 ms:
    < 0.5 ms). Ratios that are small fractions (500, 1000, 257 -> 100 Hz ...) are exact.
    """
    max_up = max(1, MAX_UPSAMPLED_HZ // orig_rate)
    ratio = Fraction(orig_rate, target_rate).limit_denominator(max_up)  # down / up
    down, up = max(ratio.numerator, 1), ratio.denominator
    if up == down:
        return signal
    factor = max(up, down)
    half = half_width * factor
    # Low-pass at 1/factor of the upsampled Nyquist; gain `up` makes up for the zeros stuffed in between samples.
    taps = (up / factor) * np.sinc(np.arange(-half, half + 1) / factor) * np.kaiser(2 * half + 1, 5.0)
    signal = np.asarray(signal, dtype=np.float64)
    channels, length = signal.shape
    num_out = -(-length * up // down)
    # Output j sits at position j * down of the upsampled signal; input k at k * up. Output j takes input k
    # with tap k * up - j * down + half when that lies in [0, 2 * half]: at most `width` inputs per output.
    width = 2 * half // up + 1
    block = max(1, 2**18 // width)
    out = np.empty((channels, num_out))
    for start in range(0, num_out, block):
        j = np.arange(start, min(start + block, num_out))
        first = -((half - j * down) // up)  # ceil((j * down - half) / up)
        k = first[:, None] + np.arange(width)
        t = k * up - (j * down)[:, None] + half
        valid = (t <= 2 * half) & (k >= 0) & (k < length)
        weights = np.where(valid, taps[np.clip(t, 0, 2 * half)], 0.0)
        out[:, j] = np.einsum("cjw,jw->cj", signal[:, np.clip(k, 0, length - 1)], weights)
    return out


def bandpass(signal: np.ndarray, rate: float, low_hz: float, high_hz: float, order: int = 2) -> np.ndarray:
    """Zero-phase band-pass in the frequency domain with the squared magnitude of Butterworth filters (as filtfilt).

    signal: (C, N) -> (C, N). Reflection padding (up to 1 s) keeps the FFT's wrap-around away from the edges.
    """
    pad = min(signal.shape[-1] - 1, int(rate))
    padded = np.pad(signal, ((0, 0), (pad, pad)), mode="reflect")
    freqs = np.fft.rfftfreq(padded.shape[-1], d=1.0 / rate)
    with np.errstate(divide="ignore"):
        highpass = 1.0 / (1.0 + (low_hz / freqs) ** (2 * order))
    lowpass = 1.0 / (1.0 + (freqs / high_hz) ** (2 * order))
    filtered = np.fft.irfft(np.fft.rfft(padded, axis=-1) * (highpass * lowpass), n=padded.shape[-1], axis=-1)
    return filtered[:, pad : pad + signal.shape[-1]]


def _record_names(record_names: Sequence[str] | None, count: int) -> list[str]:
    """The names error messages use: the given ones, else each ECG's position in the batch."""
    names = list(record_names) if record_names is not None else [f"ECG #{i} of the batch" for i in range(count)]
    if len(names) != count:
        raise ValueError(f"got {len(names)} record_names for {count} ECGs")
    return names


def _padded_length(
    values: list[np.ndarray], padding: bool | str, max_length: int | None, pad_to_multiple_of: int | None
) -> int | None:
    """The length `pad` pads every record to (None: no padding)."""
    if padding in (True, "longest"):
        target = max(item.shape[-1] for item in values)
    elif padding == "max_length":
        if max_length is None:
            raise ValueError('padding="max_length" needs max_length')
        target = max_length
    else:
        return None
    if pad_to_multiple_of:
        target = -(-target // pad_to_multiple_of) * pad_to_multiple_of
    return target


class EsiFeatureExtractor(SequenceFeatureExtractor):
    r"""
    Turns raw 12-lead ECGs into the model's `input_values` (B, 12, T), float32, plus `ecg_attention_mask` (B, T).

    Leads are matched by name (case-insensitive), so any source order works: PTB-XL's and MIMIC-IV-ECG's (which
    swaps aVL and aVF) alike. Signals are resampled to `sampling_rate`, optionally band-passed, z-scored per lead
    over their valid samples (`do_normalize`), then cropped (the start is kept) or right-padded with zeros to
    `duration_s` (or to the longest record, `padding="longest"`). The output feeds the model directly:
    `model(**feature_extractor(...))`, `model.get_ecg_features(**feature_extractor(...))`. The mask is named
    `ecg_attention_mask`, not `attention_mask`, so it cannot be confused with the caption tokens' mask when both
    go to `EsiModel` (see `EsiProcessor`).

    Args:
        sampling_rate (`int`, defaults to 100): the model's rate in Hz.
        duration_s (`float`, defaults to 10.0): the model's input duration in seconds.
        lead_names (`list[str]`): the model's lead order (PTB-XL: I, II, III, aVR, aVL, aVF, V1-V6).
        do_bandpass (`bool`, defaults to `False`), bandpass_low_hz (0.5), bandpass_high_hz (40.0): band-pass.
        do_normalize (`bool`, defaults to `True`): per-lead z-score. It removes absolute amplitude (voltage
            criteria); turn it off when amplitudes in millivolts matter more than robustness to device gain.
    """

    model_input_names = ["input_values", "ecg_attention_mask"]
    padding_strategies = (True, False, "longest", "max_length", "do_not_pad")

    def __init__(
        self,
        sampling_rate: int = 100,
        duration_s: float = 10.0,
        lead_names: Sequence[str] = PTBXL_LEAD_ORDER,
        do_bandpass: bool = False,
        bandpass_low_hz: float = 0.5,
        bandpass_high_hz: float = 40.0,
        do_normalize: bool = True,
        padding_value: float = 0.0,
        **kwargs,
    ):
        kwargs.pop("feature_size", None)  # saved by to_dict(); always the lead count
        super().__init__(
            feature_size=len(lead_names), sampling_rate=sampling_rate, padding_value=padding_value, **kwargs
        )
        self.duration_s = duration_s
        self.lead_names = list(lead_names)
        self.do_bandpass = do_bandpass
        self.bandpass_low_hz = bandpass_low_hz
        self.bandpass_high_hz = bandpass_high_hz
        self.do_normalize = do_normalize
        if do_bandpass and not 0 < bandpass_low_hz < bandpass_high_hz < sampling_rate / 2:
            raise ValueError(
                f"band-pass needs 0 < low ({bandpass_low_hz}) < high ({bandpass_high_hz}) "
                f"< Nyquist ({sampling_rate / 2}) Hz"
            )

    @property
    def num_samples(self) -> int:
        return round(self.sampling_rate * self.duration_s)

    def __call__(
        self,
        ecg: np.ndarray | torch.Tensor | Sequence[np.ndarray | torch.Tensor],
        sampling_rate: int | None = None,
        lead_names: Sequence[str] | None = None,
        channels_first: bool | None = None,
        allow_missing_leads: bool = False,
        return_tensors: str | None = None,
        record_names: Sequence[str] | None = None,
        padding: bool | str = "max_length",
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        return_attention_mask: bool = True,
    ) -> BatchFeature:
        r"""
        ecg: one ECG (2-D) or a batch (3-D array, or a list of 2-D arrays of any lengths), numpy or torch,
            (leads x time) or (time x leads).
        sampling_rate: the input's rate in Hz (required). lead_names: the input's leads, in its order (required).
        channels_first: `True` for (leads x time); inferred from the lead count when unambiguous.
        allow_missing_leads: zero-fill leads the input lacks and return `lead_mask` (B, 12) (1 = present).
        record_names: names used in error messages (defaults to the position in the batch).
        padding: `"max_length"` (default: every record cropped or padded to `max_length`), `True`/`"longest"`
            (crop to `max_length`, pad to the longest record of the batch) or `False`/`"do_not_pad"` (crop only;
            records of different lengths then come back as a list, which cannot become a tensor).
        max_length: samples at the model's rate; defaults to `sampling_rate x duration_s` of this extractor.
        pad_to_multiple_of: round the padded length up to a multiple of this.

        Returns `BatchFeature` with `input_values` (B, 12, T) float32 and `ecg_attention_mask` (B, T) int32.
        """
        self._check_call_arguments(sampling_rate, lead_names, padding)
        sources, present = self._map_leads(lead_names, allow_missing_leads)
        signals = self._split_batch(ecg)
        names = _record_names(record_names, len(signals))

        crop = max_length if max_length is not None else self.num_samples
        values = []
        for signal, name in zip(signals, names, strict=True):
            signal = self._leads_first(signal, len(lead_names), channels_first, name)
            if not np.isfinite(signal).all():
                bad = sorted({lead_names[i] for i in np.nonzero(~np.isfinite(signal))[0]})
                raise ValueError(f"{name}: contains NaN or infinite samples in lead(s) {bad}")
            # The start is kept: the model's input window is the first `crop` samples.
            values.append(self._preprocess(signal, sources, int(sampling_rate), crop)[:, :crop].astype(np.float32))
        batch = self.pad(
            {"input_values": values},
            padding=padding,
            max_length=crop,
            pad_to_multiple_of=pad_to_multiple_of,
            return_attention_mask=return_attention_mask,
            return_tensors=return_tensors,
        )
        if allow_missing_leads:
            batch["lead_mask"] = np.repeat(present[None].astype(np.int32), len(signals), axis=0)
            batch.convert_to_tensors(return_tensors)
        return batch

    def _check_call_arguments(self, sampling_rate: int | None, lead_names: Sequence[str] | None, padding) -> None:
        if sampling_rate is None:
            raise ValueError(
                "sampling_rate must be given: the ECG's rate in Hz, so it can be resampled to "
                f"{self.sampling_rate} Hz (guessing it silently distorts every interval)"
            )
        if float(sampling_rate) != int(sampling_rate) or int(sampling_rate) <= 0:
            raise ValueError(f"sampling_rate must be a positive whole number of Hz, got {sampling_rate}")
        if lead_names is None:
            raise ValueError(
                f"lead_names must be given, in the input's lead order; the model expects {self.lead_names}"
            )
        if padding not in self.padding_strategies:
            raise ValueError(f"padding must be one of {self.padding_strategies}, got {padding!r}")

    def pad(
        self,
        processed_features: BatchFeature | dict | Sequence[dict],
        padding: bool | str = True,
        max_length: int | None = None,
        truncation: bool = False,
        pad_to_multiple_of: int | None = None,
        return_attention_mask: bool | None = True,
        return_tensors: str | None = None,
    ) -> BatchFeature:
        r"""
        Pads (leads x time) `input_values` along time with `padding_value` and builds `ecg_attention_mask`
        (1 = sample, 0 = padding; an incoming mask is kept and extended).

        processed_features: `{"input_values": [(12, T_i), ...], "ecg_attention_mask": [(T_i,), ...]}` (mask
            optional), a batch (B, 12, T) under `input_values`, or a list of such dicts with one ECG each.
        padding: `True`/`"longest"` (to the longest record), `"max_length"` (to `max_length`) or
            `False`/`"do_not_pad"`. truncation: crop records longer than `max_length`.
        """
        if padding not in self.padding_strategies:
            raise ValueError(f"padding must be one of {self.padding_strategies}, got {padding!r}")
        values, masks = self._values_and_masks(processed_features)
        if truncation:
            if max_length is None:
                raise ValueError("truncation=True needs max_length")
            values, masks = [item[:, :max_length] for item in values], [mask[:max_length] for mask in masks]
        target = _padded_length(values, padding, max_length, pad_to_multiple_of)
        if target is not None:
            too_long = [i for i, item in enumerate(values) if item.shape[-1] > target]
            if too_long:
                raise ValueError(
                    f"ECG(s) {too_long} of the batch are longer than {target} samples; pass truncation=True"
                )
            values = [
                np.pad(item, ((0, 0), (0, target - item.shape[-1])), constant_values=self.padding_value)
                for item in values
            ]
            masks = [np.pad(mask, (0, target - mask.shape[-1])) for mask in masks]
        data = {"input_values": values}
        if return_attention_mask:
            data["ecg_attention_mask"] = masks
        if len({item.shape[-1] for item in values}) == 1:
            data = {key: np.stack(items) for key, items in data.items()}
        elif return_tensors is not None:
            raise ValueError("records of different lengths cannot become one tensor; pass padding=True")
        return BatchFeature(data, tensor_type=return_tensors)

    def _values_and_masks(
        self, processed_features: BatchFeature | dict | Sequence[dict]
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """`pad`'s input as lists of (12, T_i) signals and (T_i,) int32 masks (all ones where none came)."""
        if isinstance(processed_features, (list, tuple)):
            values = [item["input_values"] for item in processed_features]
            masks = [item.get("ecg_attention_mask") for item in processed_features]
        elif "input_values" in processed_features:
            values = list(processed_features["input_values"])
            masks = processed_features.get("ecg_attention_mask")
            masks = list(masks) if masks is not None else [None] * len(values)
        else:
            raise ValueError(f"pad() needs 'input_values', got keys {list(processed_features)}")
        values = [self._as_numpy(item) for item in values]
        masks = [
            np.ones(item.shape[-1], dtype=np.int32) if mask is None else self._as_numpy(mask).astype(np.int32)
            for item, mask in zip(values, masks, strict=True)
        ]
        for index, (item, mask) in enumerate(zip(values, masks, strict=True)):
            if item.ndim != 2 or item.shape[0] != len(self.lead_names) or mask.shape != item.shape[-1:]:
                raise ValueError(
                    f"ECG #{index} of the batch: expected input_values ({len(self.lead_names)} leads, T) and "
                    f"ecg_attention_mask (T,), got {item.shape} and {mask.shape}"
                )
        return values, masks

    @staticmethod
    def _as_numpy(item) -> np.ndarray:
        return item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else np.asarray(item)

    def _map_leads(self, lead_names: Sequence[str], allow_missing: bool) -> tuple[list[int | None], np.ndarray]:
        """For each model lead, its row in the input (None when absent), and the (12,) present mask."""
        sources = map_leads_by_name(lead_names, self.lead_names)
        missing = [name for name, source in zip(self.lead_names, sources, strict=True) if source is None]
        if missing and not allow_missing:
            raise ValueError(
                f"missing lead(s) {missing}; pass allow_missing_leads=True to zero-fill them "
                "(the model was trained on 12 leads, so expect lower accuracy)"
            )
        return sources, np.array([source is not None for source in sources])

    @staticmethod
    def _split_batch(ecg) -> list[np.ndarray]:
        if isinstance(ecg, (list, tuple)):
            items = list(ecg)
        else:
            array = ecg.detach().cpu().numpy() if isinstance(ecg, torch.Tensor) else np.asarray(ecg)
            if array.ndim not in (2, 3):
                raise ValueError(f"expected one ECG (2-D) or a batch (3-D), got an array of shape {array.shape}")
            items = [array] if array.ndim == 2 else list(array)
        out = []
        for index, item in enumerate(items):
            item = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else np.asarray(item)
            if item.ndim != 2:
                raise ValueError(
                    f"ECG #{index} of the batch: expected (leads x time) or (time x leads), got {item.shape}"
                )
            out.append(item.astype(np.float64))
        return out

    @staticmethod
    def _leads_first(signal: np.ndarray, num_leads: int, channels_first: bool | None, name: str) -> np.ndarray:
        if channels_first is None:
            rows, cols = signal.shape[0] == num_leads, signal.shape[1] == num_leads
            if rows and cols:
                raise ValueError(f"{name}: shape {signal.shape} is ambiguous; pass channels_first=True or False")
            if not (rows or cols):
                raise ValueError(f"{name}: shape {signal.shape} does not match the {num_leads} leads in lead_names")
            channels_first = rows
        leads_first = signal if channels_first else signal.T
        if leads_first.shape[0] != num_leads:
            raise ValueError(f"{name}: has {leads_first.shape[0]} leads but lead_names lists {num_leads}")
        if leads_first.shape[1] == 0:
            raise ValueError(f"{name}: has no samples")
        return leads_first

    def _preprocess(self, signal: np.ndarray, sources: list[int | None], rate: int, crop: int) -> np.ndarray:
        """(input leads, N) at `rate` -> (12, N') at the model's rate, in the model's lead order."""
        ordered = np.zeros((len(sources), signal.shape[1]))
        for row, source in enumerate(sources):
            if source is not None:
                ordered[row] = signal[source]
        ordered = resample_poly(ordered, rate, self.sampling_rate)
        if self.do_bandpass:
            ordered = bandpass(ordered, self.sampling_rate, self.bandpass_low_hz, self.bandpass_high_hz)
        if self.do_normalize:
            valid = ordered[:, :crop]  # statistics of the part the model sees
            # Zero-filled (absent) leads stay zero: their mean and deviation are 0.
            ordered = (ordered - valid.mean(axis=1, keepdims=True)) / np.maximum(valid.std(axis=1, keepdims=True), 1e-6)
        return ordered


EsiFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")

__all__ = ["EsiFeatureExtractor", "resample_poly", "bandpass"]
