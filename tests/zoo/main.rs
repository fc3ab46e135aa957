//! The integration tests of burn-zoo, in one test binary: every module below was its own test
//! binary once, and each linked every model for every backend again. One binary links once.
//!
//! Each module is one area: parity with transformers per family, the ChatGLM golden files,
//! word2vec against gensim, the `zoo` command line, the library pipeline, real weights.

#[macro_use]
mod common;

mod bert;
mod blip2;
mod bloom;
mod cli;
mod codegen;
mod finetune;
mod glm_golden;
mod glm_parity;
mod glm_tokenizer;
mod gpt2;
mod gpt_neo;
mod hostile;
mod llama;
mod measure;
mod opt;
mod pipeline;
mod ptuning;
mod quant;
mod real_weights;
mod serve;
mod survey;
mod t5;
mod tokenizer;
mod word2vec_gensim;
mod word2vec_train;
