//! NAC-UE as a detector: a profile of the pooled profiling pairs, re-binned on the GPU.

use super::{Context, Detector, PassSet};
use crate::error::Result;
use crate::nac::{LayerParams, Profile};

pub struct NacUe {
    pub params: Vec<LayerParams>,
    profile: Option<Profile>,
}

impl NacUe {
    pub fn new(params: Vec<LayerParams>) -> Self {
        NacUe { params, profile: None }
    }
}

impl Detector for NacUe {
    fn fit(&mut self, cx: &Context, train: &PassSet, _: Option<&PassSet>) -> Result<()> {
        let mut profile = Profile::new(cx.engine, cx.network, &self.params, cx.preprocessing)?;
        profile.add_pooled(cx.engine, train.pooled()?)?;
        self.profile = Some(profile);
        Ok(())
    }

    fn score(&self, cx: &Context, set: &PassSet) -> Result<Vec<f32>> {
        Ok(self.profile.as_ref().expect("fitted").score_pooled(cx.engine, set.pooled()?)?.score)
    }
}
