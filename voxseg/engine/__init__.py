"""The engine: training runs, inference and what they share (the top layer of voxseg; it
imports data, models and evaluation, never the reverse). Nothing is imported here.

    finetune          supervised fine-tuning: the config schema and the run
    pretrain          self-supervised pretraining (ISCC): the config schema and the run
    trainer           the step-based training loop with hooks
    hooks             progress bar, TensorBoard, validation, EMA of weights, checkpoints
    optim             optimizer parameter groups, warm-up + cosine schedule
    checkpoint        atomic save, exact resume, pretrained backbone weights
    ema               exponential moving average of a model's weights
    process_group     data-parallel training under torchrun: joining the process group
    device            which device a run uses (CUDA where torch and MinkowskiEngine have it)
    interrupt         Ctrl-C and SIGTERM honoured between steps
    inference         a segmentation model over a dataset, scan by scan
    prediction_files  predictions written as the benchmarks' files
"""
