//! Every knob of the augmentation, its presets and their checks.

use crate::error::{Error, Result};

/// The one list of augmentation knobs: calls `$m!` with every knob's doc, name and type
/// (`f32` or `(f32, f32)`). `AugmentConfig`, `AugmentConfig::KNOBS` and the Python class
/// (lib.rs) are all made from it, so a knob added here reaches Python.
#[macro_export]
macro_rules! augment_knobs {
    ($m:ident) => {
        $m! {
            /// Fraction of (width, height) kept, centred, when no crop box is given.
            center_crop: (f32, f32),
            /// Vertical shift of that region as a fraction of the height (negative = up), clamped so
            /// the region stays inside the image.
            center_offset_y: f32,
            /// Random resized crop (torchvision semantics): area fraction and aspect-ratio range,
            /// 10 tries, then the whole region.
            rrc_scale: (f32, f32),
            rrc_ratio: (f32, f32),
            rrc_p: f32,
            hflip_p: f32,
            /// Rotation angle uniform in [-rotate_deg, rotate_deg], positive = counter-clockwise.
            rotate_deg: f32,
            rotate_p: f32,
            /// ColorJitter (torchvision semantics, fixed order b, c, s, h): factors uniform in
            /// [max(0, 1 - x), 1 + x]; hue shift uniform in [-hue, hue] turns (hue <= 0.5).
            brightness: f32,
            contrast: f32,
            saturation: f32,
            hue: f32,
            jitter_p: f32,
            grayscale_p: f32,
            /// Gaussian noise, standard deviation in pixel units (0-255).
            noise_std: f32,
            noise_p: f32,
            /// Random erasing (torchvision semantics: area fraction, aspect ratio, 10 tries); the
            /// rectangle is filled with uniform random noise, like torchvision's value="random".
            erase_p: f32,
            erase_scale: (f32, f32),
            erase_ratio: (f32, f32),
            /// Mask-appearance augmentation (see `mask_appearance`): probability and strength in
            /// [0, 1] (how far hue turns and how opaque the pattern is).
            mask_aug_p: f32,
            mask_aug_strength: f32,
        }
    };
}

macro_rules! define_config {
    ($($(#[doc = $doc:literal])* $name:ident: $ty:ty,)*) => {
        /// Every knob of the augmentation; probabilities are in [0, 1].
        #[derive(Clone, Debug, PartialEq)]
        pub struct AugmentConfig {
            $($(#[doc = $doc])* pub $name: $ty,)*
        }

        impl AugmentConfig {
            /// The name of every knob, in the order of the list.
            pub const KNOBS: &'static [&'static str] = &[$(stringify!($name)),*];
        }
    };
}

augment_knobs!(define_config);

impl AugmentConfig {
    /// Deterministic crop + resize only: every probability is 0.
    pub fn eval() -> Self {
        AugmentConfig {
            center_crop: (1.0, 0.75),
            center_offset_y: -0.05,
            rrc_scale: (0.08, 1.0),
            rrc_ratio: (3.0 / 4.0, 4.0 / 3.0),
            rrc_p: 0.0,
            hflip_p: 0.0,
            rotate_deg: 0.0,
            rotate_p: 0.0,
            brightness: 0.0,
            contrast: 0.0,
            saturation: 0.0,
            hue: 0.0,
            jitter_p: 0.0,
            grayscale_p: 0.0,
            noise_std: 0.0,
            noise_p: 0.0,
            erase_p: 0.0,
            erase_scale: (0.02, 0.33),
            erase_ratio: (0.3, 3.3),
            mask_aug_p: 0.0,
            mask_aug_strength: 0.5,
        }
    }

    /// The preset called `name` (see `PRESETS`).
    pub fn preset(name: &str) -> Result<Self> {
        match PRESETS.iter().find(|(n, _)| *n == name) {
            Some((_, make)) => Ok(make()),
            None => {
                let names: Vec<&str> = PRESETS.iter().map(|(n, _)| *n).collect();
                Err(Error::Invalid(format!(
                    "unknown augmentation preset {name:?} (expected one of {})",
                    names.join(", ")
                )))
            }
        }
    }

    /// Check every knob; `process` calls this, so a bad config fails before any pixel work.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str, v: &dyn std::fmt::Debug| {
            Err(Error::Invalid(format!("augment {what} = {v:?} is out of range")))
        };
        let unit = |v: f32| (0.0..=1.0).contains(&v);
        let range = |(lo, hi): (f32, f32), max: f32| lo > 0.0 && lo <= hi && hi <= max;
        for (name, p) in [
            ("rrc_p", self.rrc_p),
            ("hflip_p", self.hflip_p),
            ("rotate_p", self.rotate_p),
            ("jitter_p", self.jitter_p),
            ("grayscale_p", self.grayscale_p),
            ("noise_p", self.noise_p),
            ("erase_p", self.erase_p),
            ("mask_aug_p", self.mask_aug_p),
            ("mask_aug_strength", self.mask_aug_strength),
        ] {
            if !unit(p) {
                return bad(name, &p);
            }
        }
        let (cw, ch) = self.center_crop;
        if !(cw > 0.0 && cw <= 1.0 && ch > 0.0 && ch <= 1.0) {
            return bad("center_crop", &self.center_crop);
        }
        if !(-1.0..=1.0).contains(&self.center_offset_y) {
            return bad("center_offset_y", &self.center_offset_y);
        }
        if !range(self.rrc_scale, 1.0) {
            return bad("rrc_scale", &self.rrc_scale);
        }
        if !range(self.rrc_ratio, 100.0) {
            return bad("rrc_ratio", &self.rrc_ratio);
        }
        if !(0.0..=180.0).contains(&self.rotate_deg) {
            return bad("rotate_deg", &self.rotate_deg);
        }
        for (name, v) in [
            ("brightness", self.brightness),
            ("contrast", self.contrast),
            ("saturation", self.saturation),
        ] {
            if !(0.0..=10.0).contains(&v) {
                return bad(name, &v);
            }
        }
        if !(0.0..=0.5).contains(&self.hue) {
            return bad("hue", &self.hue);
        }
        if !(0.0..=255.0).contains(&self.noise_std) {
            return bad("noise_std", &self.noise_std);
        }
        if !range(self.erase_scale, 1.0) {
            return bad("erase_scale", &self.erase_scale);
        }
        if !range(self.erase_ratio, 100.0) {
            return bad("erase_ratio", &self.erase_ratio);
        }
        Ok(())
    }
}

/// Every preset by name, in the order users see them. "mask" jitters colour hard (mask
/// colours vary and carry no label); "gender" and "age" keep colour mild (skin and hair colour
/// carry age cues) and keep crops large (wrinkles and hairline are small details). All but
/// "none" flip with p = 0.5.
pub const PRESETS: [Preset; 5] = [
    ("none", AugmentConfig::eval),
    ("light", light),
    ("mask", mask),
    ("gender", gender),
    ("age", age),
];

/// A preset: its name and what it makes.
pub type Preset = (&'static str, fn() -> AugmentConfig);

/// The base of the training presets: the eval crop, flipped half the time.
fn flip() -> AugmentConfig {
    AugmentConfig {
        hflip_p: 0.5,
        ..AugmentConfig::eval()
    }
}

fn light() -> AugmentConfig {
    AugmentConfig {
        rrc_scale: (0.8, 1.0),
        rrc_p: 0.5,
        rotate_deg: 5.0,
        rotate_p: 0.2,
        brightness: 0.1,
        contrast: 0.1,
        saturation: 0.1,
        jitter_p: 0.5,
        ..flip()
    }
}

fn mask() -> AugmentConfig {
    AugmentConfig {
        rrc_scale: (0.6, 1.0),
        rrc_p: 0.8,
        rotate_deg: 10.0,
        rotate_p: 0.3,
        brightness: 0.3,
        contrast: 0.3,
        saturation: 0.4,
        hue: 0.1,
        jitter_p: 0.8,
        grayscale_p: 0.1,
        noise_std: 6.0,
        noise_p: 0.2,
        erase_p: 0.2,
        erase_scale: (0.02, 0.1),
        mask_aug_p: 0.3,
        mask_aug_strength: 0.6,
        ..flip()
    }
}

fn gender() -> AugmentConfig {
    AugmentConfig {
        rrc_scale: (0.7, 1.0),
        rrc_p: 0.7,
        rotate_deg: 8.0,
        rotate_p: 0.3,
        brightness: 0.15,
        contrast: 0.15,
        saturation: 0.1,
        jitter_p: 0.5,
        grayscale_p: 0.05,
        noise_std: 3.0,
        noise_p: 0.1,
        erase_p: 0.2,
        erase_scale: (0.02, 0.1),
        ..flip()
    }
}

fn age() -> AugmentConfig {
    AugmentConfig {
        rrc_scale: (0.8, 1.0),
        rrc_p: 0.5,
        rotate_deg: 5.0,
        rotate_p: 0.3,
        brightness: 0.1,
        contrast: 0.1,
        saturation: 0.05,
        jitter_p: 0.5,
        noise_std: 2.0,
        noise_p: 0.1,
        erase_p: 0.1,
        erase_scale: (0.02, 0.08),
        ..flip()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate_and_unknown_is_an_error() {
        for (name, _) in PRESETS {
            let cfg = AugmentConfig::preset(name).unwrap();
            cfg.validate().unwrap();
            assert!(name == "none" || cfg.hflip_p == 0.5);
        }
        assert!(AugmentConfig::preset("heavy").is_err());
        let bad = AugmentConfig {
            hue: 0.7,
            ..AugmentConfig::eval()
        };
        assert!(bad.validate().is_err());
        let bad = AugmentConfig {
            rrc_scale: (0.9, 0.5),
            ..AugmentConfig::eval()
        };
        assert!(bad.validate().is_err());
        let bad = AugmentConfig {
            hflip_p: f32::NAN,
            ..AugmentConfig::eval()
        };
        assert!(bad.validate().is_err());
        let eval = AugmentConfig::eval();
        assert_eq!(AugmentConfig::preset("none").unwrap(), eval);
    }
}
